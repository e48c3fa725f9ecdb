// Command goclient is an interop check for a Layotto-compatible sidecar:
// it drives a fixed sequence of Runtime rpcs through Go gRPC stubs and
// prints the results as a single JSON object.
//
// -mode unary (default) runs the unary rpcs; -mode stream checks the
// bidirectional SubscribeConfiguration stream: pushes for a save and a
// delete of a subscribed key, made through the unary API on the same
// connection, are printed as {"pushes":[[key,content],...]}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
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

type streamResult struct {
	Pushes [][2]string `json:"pushes"`
}

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "%s failed: %v\n", step, err)
	os.Exit(1)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:34904", "sidecar gRPC address host:port")
	timeout := flag.Duration("timeout", 30*time.Second, "overall deadline")
	mode := flag.String("mode", "unary", "check to run: unary or stream")
	flag.Parse()
	if *mode != "unary" && *mode != "stream" {
		fmt.Fprintf(os.Stderr, "unknown -mode %q (want unary or stream)\n", *mode)
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("dial", err)
	}
	defer conn.Close()
	c := pb.NewRuntimeClient(conn)
	var out any
	if *mode == "stream" {
		out = runStream(ctx, c)
	} else {
		out = runUnary(ctx, c)
	}

	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail("encode", err)
	}
}

func runUnary(ctx context.Context, c pb.RuntimeClient) result {
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
		Group:     "g",
		Label:     "l",
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
	return out
}

type pushOrErr struct {
	resp *pb.SubscribeConfigurationResponse
	err  error
}

func runStream(ctx context.Context, c pb.RuntimeClient) streamResult {
	const appID, key = "go-stream", "gk"
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.SubscribeConfiguration(sctx)
	if err != nil {
		fail("SubscribeConfiguration open", err)
	}
	if err := stream.Send(&pb.SubscribeConfigurationRequest{
		StoreName: "config_demo", AppId: appID, Keys: []string{key},
	}); err != nil {
		fail("SubscribeConfiguration send", err)
	}

	// Receive in the background so a missing push is reported as a timeout.
	pushes := make(chan pushOrErr, 8)
	go func() {
		for {
			resp, err := stream.Recv()
			pushes <- pushOrErr{resp, err}
			if err != nil {
				return
			}
		}
	}()
	next := func(what string) *pb.SubscribeConfigurationResponse {
		select {
		case p := <-pushes:
			if p.err == io.EOF {
				fail("SubscribeConfiguration recv ("+what+")", fmt.Errorf("stream ended before the push"))
			}
			if p.err != nil {
				fail("SubscribeConfiguration recv ("+what+")", p.err)
			}
			if p.resp.GetStoreName() != "config_demo" || p.resp.GetAppId() != appID {
				fail("SubscribeConfiguration recv ("+what+")", fmt.Errorf("unexpected push header %v", p.resp))
			}
			return p.resp
		case <-time.After(10 * time.Second):
			fail("SubscribeConfiguration recv ("+what+")", fmt.Errorf("no push within 10s"))
		}
		return nil
	}

	select {
	case p := <-pushes:
		fail("SubscribeConfiguration", fmt.Errorf("unexpected message before any change: %v %v", p.resp, p.err))
	case <-time.After(200 * time.Millisecond):
	}

	out := streamResult{Pushes: [][2]string{}}
	record := func(resp *pb.SubscribeConfigurationResponse) {
		for _, it := range resp.GetItems() {
			out.Pushes = append(out.Pushes, [2]string{it.GetKey(), it.GetContent()})
		}
	}

	if _, err := c.SaveConfiguration(ctx, &pb.SaveConfigurationRequest{
		StoreName: "config_demo", AppId: appID,
		Items: []*pb.ConfigurationItem{{Key: key, Content: "v1"}},
	}); err != nil {
		fail("SaveConfiguration", err)
	}
	record(next("save"))

	if _, err := c.DeleteConfiguration(ctx, &pb.DeleteConfigurationRequest{
		StoreName: "config_demo", AppId: appID, Keys: []string{key},
	}); err != nil {
		fail("DeleteConfiguration", err)
	}
	record(next("delete"))

	if err := stream.CloseSend(); err != nil {
		fail("SubscribeConfiguration CloseSend", err)
	}
	cancel()
	return out
}
