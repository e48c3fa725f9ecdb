// Command goclient is an interop check for a Layotto-compatible sidecar:
// it drives a fixed sequence of Runtime rpcs through Go gRPC stubs and
// prints the results as a single JSON object.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "layottofast/interop/goclient/runtimev1"
)

type configItem struct {
	Key     string `json:"key"`
	Content string `json:"content"`
	Group   string `json:"group"`
	Label   string `json:"label"`
}

type result struct {
	Hello   string       `json:"hello"`
	State   string       `json:"state"`
	Config  []configItem `json:"config"`
	TryLock bool         `json:"trylock"`
	Unlock  string       `json:"unlock"`
	IDs     []int64      `json:"ids"`
}

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "%s failed: %v\n", step, err)
	os.Exit(1)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:34904", "sidecar gRPC address host:port")
	timeout := flag.Duration("timeout", 30*time.Second, "overall deadline")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("dial", err)
	}
	defer conn.Close()
	c := pb.NewRuntimeClient(conn)
	var out result

	hello, err := c.SayHello(ctx, &pb.SayHelloRequest{ServiceName: "helloworld", Name: "go"})
	if err != nil {
		fail("SayHello", err)
	}
	out.Hello = hello.GetHello()

	_, err = c.SaveState(ctx, &pb.SaveStateRequest{
		StoreName: "in-memory",
		States:    []*pb.StateItem{{Key: "go-k", Value: []byte("go-v")}},
	})
	if err != nil {
		fail("SaveState", err)
	}
	st, err := c.GetState(ctx, &pb.GetStateRequest{StoreName: "in-memory", Key: "go-k"})
	if err != nil {
		fail("GetState", err)
	}
	out.State = string(st.GetData())

	_, err = c.SaveConfiguration(ctx, &pb.SaveConfigurationRequest{
		StoreName: "config_demo",
		AppId:     "app1",
		Items: []*pb.ConfigurationItem{
			{Key: "go-cfg", Content: "c1", Group: "g", Label: "l"},
		},
	})
	if err != nil {
		fail("SaveConfiguration", err)
	}
	cfg, err := c.GetConfiguration(ctx, &pb.GetConfigurationRequest{
		StoreName: "config_demo",
		AppId:     "app1",
		Keys:      []string{"go-cfg"},
	})
	if err != nil {
		fail("GetConfiguration", err)
	}
	out.Config = []configItem{}
	for _, it := range cfg.GetItems() {
		out.Config = append(out.Config, configItem{
			Key: it.GetKey(), Content: it.GetContent(), Group: it.GetGroup(), Label: it.GetLabel(),
		})
	}

	tl, err := c.TryLock(ctx, &pb.TryLockRequest{
		StoreName: "lock_demo", ResourceId: "go-r", LockOwner: "o1", Expire: 5,
	})
	if err != nil {
		fail("TryLock", err)
	}
	out.TryLock = tl.GetSuccess()
	ul, err := c.Unlock(ctx, &pb.UnlockRequest{
		StoreName: "lock_demo", ResourceId: "go-r", LockOwner: "o1",
	})
	if err != nil {
		fail("Unlock", err)
	}
	out.Unlock = ul.GetStatus().String()

	out.IDs = []int64{}
	for i := 0; i < 2; i++ {
		id, err := c.GetNextId(ctx, &pb.GetNextIdRequest{StoreName: "sequencer_demo", Key: "go-seq"})
		if err != nil {
			fail("GetNextId", err)
		}
		out.IDs = append(out.IDs, id.GetNextId())
	}

	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail("encode", err)
	}
}
