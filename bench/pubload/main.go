// Command pubload is the load generator of make bench's pub/sub part (bench/pubsub.py).
//
// One process, one client stack for both paths: it publishes either through the sidecar
// (gRPC PublishEvent) or directly to the backend (go-redis XADD, nats.go JetStream publish
// awaiting the PubAck), and it receives either as the app's AppCallback server that the
// sidecar dials (OnTopicEvent, answered SUCCESS) or as a direct consumer (XREADGROUP + XACK,
// a JetStream pull consumer with explicit acks). Every message carries its run and its send
// time, so publish-to-delivery is measured on this process's monotonic clock.
// For scale it also times round trips to a bare TCP echo server (--echo, the echo path), the
// least a hop between two processes costs on this machine, and GetState calls to a gRPC server
// that answers without any work (--grpc-floor, the floor path), the least a gRPC hop costs.
//
// It starts its callback server and direct consumers, prints {"ready":true}, then reads one
// JSON command per stdin line, runs it and prints one JSON result line; EOF ends it. The
// protobuf messages it needs (PublishEventRequest, TopicEventRequest's data,
// ListTopicSubscriptionsResponse) are written and read by hand with protowire.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	group          = "pubload"
	publishMethod  = "/spec.proto.runtime.v1.Runtime/PublishEvent"
	getStateMethod = "/spec.proto.runtime.v1.Runtime/GetState"
	payloadTag     = "pl"
	contentType    = "text/plain"
	readBatch      = 100 // entries per XREADGROUP, as the sidecar's queueDepth default
	commandTimeout = 10 * time.Second
)

var epoch = time.Now()

// now is nanoseconds on the monotonic clock since the process started.
func now() int64 { return int64(time.Since(epoch)) }

// --- gRPC without generated code --------------------------------------------------------------

// rawCodec passes messages through as bytes; named "proto" so the content-type stays application/grpc.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func publishRequest(pubsub, topic string, data []byte) []byte {
	b := make([]byte, 0, len(pubsub)+len(topic)+len(data)+len(contentType)+16)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, pubsub)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, topic)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, data)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	return protowire.AppendString(b, contentType)
}

// bytesField is field number `want` (length-delimited) of a protobuf message, or nil.
func bytesField(b []byte, want protowire.Number) []byte {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == want && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil
			}
			return v
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil
		}
		b = b[m:]
	}
	return nil
}

// subscriptionList is a ListTopicSubscriptionsResponse for "pubsub/topic" items.
func subscriptionList(items []string) []byte {
	var out []byte
	for _, item := range items {
		pubsub, topic, _ := strings.Cut(item, "/")
		var sub []byte
		sub = protowire.AppendTag(sub, 1, protowire.BytesType)
		sub = protowire.AppendString(sub, pubsub)
		sub = protowire.AppendTag(sub, 2, protowire.BytesType)
		sub = protowire.AppendString(sub, topic)
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, sub)
	}
	return out
}

func serveCallback(port int, subscriptions []string) (*grpc.Server, error) {
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	list := subscriptionList(subscriptions)
	server := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "spec.proto.runtime.v1.AppCallback",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "ListTopicSubscriptions", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var in []byte
				if err := dec(&in); err != nil {
					return nil, err
				}
				out := slices.Clone(list)
				return &out, nil
			}},
			{MethodName: "OnTopicEvent", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				at := now()
				var in []byte
				if err := dec(&in); err != nil {
					return nil, err
				}
				received(bytesField(in, 7), at)
				out := []byte{} // TopicEventResponse{status: SUCCESS}
				return &out, nil
			}},
		},
	}, struct{}{})
	go func() { _ = server.Serve(listener) }()
	return server, nil
}

// --- runs and their measurements ----------------------------------------------------------------

type run struct {
	id          int64
	measureFrom int64 // send times before this are warm-up: delivered and counted, not measured
	delivered   atomic.Int64
	last        atomic.Int64 // when the latest delivery arrived
	mu          sync.Mutex
	delivery    []int64
}

var current atomic.Pointer[run]

// received records one delivered payload: "pl <run> <send ns> xxx...".
func received(payload []byte, at int64) {
	r := current.Load()
	if r == nil {
		return
	}
	fields := strings.SplitN(string(payload), " ", 4)
	if len(fields) < 3 || fields[0] != payloadTag {
		return
	}
	id, err1 := strconv.ParseInt(fields[1], 10, 64)
	sent, err2 := strconv.ParseInt(fields[2], 10, 64)
	if err1 != nil || err2 != nil || id != r.id {
		return // a previous run's message, delivered late
	}
	r.delivered.Add(1)
	for last := r.last.Load(); at > last && !r.last.CompareAndSwap(last, at); last = r.last.Load() {
	}
	if sent >= r.measureFrom {
		r.mu.Lock()
		r.delivery = append(r.delivery, at-sent)
		r.mu.Unlock()
	}
}

func payload(id, sent int64, size int) []byte {
	b := make([]byte, 0, size+24)
	b = append(b, payloadTag...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, id, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, sent, 10)
	b = append(b, ' ')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// envelope is what the sidecar would store for data: a CloudEvent in JSON, so that a direct
// publish hands the backend the same size of message as one through the sidecar.
func envelope(data []byte, topic, pubsub string) []byte {
	var id [16]byte
	for i := range 2 {
		v := rand.Uint64()
		for j := range 8 {
			id[i*8+j] = byte(v >> (8 * j))
		}
	}
	b := make([]byte, 0, 256+len(data))
	b = append(b, `{"specversion":"1.0","id":"`...)
	b = hex.AppendEncode(b, id[:4])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[4:6])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[6:8])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[8:10])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[10:])
	b = append(b, `","source":"pubload","type":"com.dapr.event.sent","datacontenttype":"text/plain","topic":`...)
	b = strconv.AppendQuote(b, topic)
	b = append(b, `,"pubsubname":`...)
	b = strconv.AppendQuote(b, pubsub)
	b = append(b, `,"data":`...)
	b = strconv.AppendQuote(b, string(data))
	return append(b, '}')
}

func unwrapEnvelope(stored []byte) []byte {
	var event struct {
		Data string `json:"data"`
	}
	if json.Unmarshal(stored, &event) != nil {
		return nil
	}
	return []byte(event.Data)
}

// --- backends -------------------------------------------------------------------------------------

type publisher func(ctx context.Context, data []byte) error

type clients struct {
	sidecar *grpc.ClientConn
	floor   *grpc.ClientConn // a gRPC server that answers without any work (--grpc-floor)
	goFloor *grpc.ClientConn // grpc-go's server answering without any work (--grpc-go-floor)
	redis   *redis.Client
	nats    *nats.Conn
	js      jetstream.JetStream
	echo    *echoPool
}

// echoPool holds connections to a bare TCP echo server, one per round trip in flight.
type echoPool struct {
	address string
	idle    chan net.Conn
}

// roundTrip sends data and reads it back whole over an idle connection (or a new one).
func (p *echoPool) roundTrip(data []byte) error {
	var conn net.Conn
	select {
	case conn = <-p.idle:
	default:
		var err error
		if conn, err = net.Dial("tcp", p.address); err != nil {
			return err
		}
	}
	back := make([]byte, len(data))
	if _, err := conn.Write(data); err != nil {
		conn.Close()
		return err
	}
	if _, err := io.ReadFull(conn, back); err != nil {
		conn.Close()
		return err
	}
	select {
	case p.idle <- conn:
	default:
		conn.Close()
	}
	return nil
}

func (c *clients) publisher(backend, path, pubsub, topic string) (publisher, error) {
	switch {
	case path == "sidecar":
		if c.sidecar == nil {
			return nil, errors.New("no --sidecar given")
		}
		return func(ctx context.Context, data []byte) error {
			in := publishRequest(pubsub, topic, data)
			var out []byte
			return c.sidecar.Invoke(ctx, publishMethod, &in, &out, grpc.ForceCodec(rawCodec{}))
		}, nil
	case path == "hop": // GetState on an in-memory store: the gRPC hop with almost nothing behind it
		if c.sidecar == nil {
			return nil, errors.New("no --sidecar given")
		}
		return getState(c.sidecar, pubsub, topic), nil
	case path == "floor": // GetState of a server that answers in Rust alone: a gRPC hop and nothing else
		if c.floor == nil {
			return nil, errors.New("no --grpc-floor given")
		}
		return getState(c.floor, pubsub, topic), nil
	case path == "go-floor": // the same, answered by grpc-go's server: the gRPC hop of another implementation
		if c.goFloor == nil {
			return nil, errors.New("no --grpc-go-floor given")
		}
		return getState(c.goFloor, pubsub, topic), nil
	case path == "echo": // one bare loopback round trip: the least any hop costs here
		if c.echo == nil {
			return nil, errors.New("no --echo given")
		}
		return func(_ context.Context, data []byte) error { return c.echo.roundTrip(data) }, nil
	case path == "direct" && backend == "redis" && c.redis != nil:
		return func(ctx context.Context, data []byte) error {
			return c.redis.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: []any{"data", envelope(data, topic, pubsub)}}).Err()
		}, nil
	case path == "direct" && backend == "jetstream" && c.js != nil:
		return func(ctx context.Context, data []byte) error {
			_, err := c.js.Publish(ctx, topic, envelope(data, topic, pubsub))
			return err
		}, nil
	}
	return nil, fmt.Errorf("no publisher for %s %s", backend, path)
}

// getState calls GetState of key in store over conn, its answer unread.
func getState(conn *grpc.ClientConn, store, key string) publisher {
	var request []byte
	request = protowire.AppendTag(request, 1, protowire.BytesType)
	request = protowire.AppendString(request, store)
	request = protowire.AppendTag(request, 2, protowire.BytesType)
	request = protowire.AppendString(request, key)
	return func(ctx context.Context, _ []byte) error {
		in := slices.Clone(request)
		var out []byte
		return conn.Invoke(ctx, getStateMethod, &in, &out, grpc.ForceCodec(rawCodec{}))
	}
}

// consumeRedis reads topic as one consumer of a group, as the sidecar's component does.
func consumeRedis(ctx context.Context, client *redis.Client, topic string) error {
	err := client.XGroupCreateMkStream(ctx, topic, group, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return err
	}
	go func() {
		for ctx.Err() == nil {
			streams, err := client.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: group, Consumer: "pubload", Streams: []string{topic, ">"}, Count: readBatch, Block: time.Second,
			}).Result()
			if err != nil {
				if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
					time.Sleep(50 * time.Millisecond)
				}
				continue
			}
			pipe := client.Pipeline()
			for _, stream := range streams {
				for _, message := range stream.Messages {
					at := now()
					if data, ok := message.Values["data"].(string); ok {
						received(unwrapEnvelope([]byte(data)), at)
					}
					pipe.XAck(ctx, topic, group, message.ID)
				}
			}
			_, _ = pipe.Exec(ctx)
		}
	}()
	return nil
}

// streamName is the stream the sidecar's component makes for a topic (the topics here need no escaping).
func streamName(topic string) string { return topic }

// consumeJetStream reads topic through a durable pull consumer with explicit acks.
func consumeJetStream(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.ConsumeContext, error) {
	setup, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	stream, err := js.CreateOrUpdateStream(setup, jetstream.StreamConfig{
		Name: streamName(topic), Subjects: []string{topic}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", topic, err)
	}
	consumer, err := stream.CreateOrUpdateConsumer(setup, jetstream.ConsumerConfig{
		Durable: group, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: topic,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer of %s: %w", topic, err)
	}
	return consumer.Consume(func(msg jetstream.Msg) {
		at := now()
		received(unwrapEnvelope(msg.Data()), at)
		_ = msg.Ack()
	})
}

// --- one command ------------------------------------------------------------------------------

type command struct {
	Backend      string  `json:"backend"` // redis | jetstream
	Path         string  `json:"path"`    // direct | sidecar | hop, floor (GetState of key topic in store pubsub) | echo
	Pubsub       string  `json:"pubsub"`  // the sidecar's component name
	Topic        string  `json:"topic"`
	Rate         float64 `json:"rate"`      // > 0: open loop at this many publishes a second
	InFlight     int     `json:"in_flight"` // closed loop: publishers each with one publish in flight
	Seconds      float64 `json:"seconds"`
	Warmup       float64 `json:"warmup"`
	Deliver      bool    `json:"deliver"` // wait for every message to be delivered, and measure it
	DrainSeconds float64 `json:"drain_seconds"`
	PayloadBytes int     `json:"payload_bytes"`
}

type result struct {
	Published      int64   `json:"published"`       // in the measured window
	PublishedTotal int64   `json:"published_total"` // warm-up included: what CPU is divided by
	Errors         int64   `json:"errors"`
	FirstError     string  `json:"first_error,omitempty"`
	Seconds        float64 `json:"seconds"`
	PerSecond      float64 `json:"per_second"`
	PublishP50     float64 `json:"publish_p50_us"`
	PublishP99     float64 `json:"publish_p99_us"`
	PublishP999    float64 `json:"publish_p999_us"`
	Delivered      int64   `json:"delivered"`            // of published_total
	DeliveredRate  float64 `json:"delivered_per_second"` // from the first publish to the last delivery
	Undelivered    int64   `json:"undelivered"`          // still missing when the drain gave up
	DeliveryP50    float64 `json:"delivery_p50_us"`
	DeliveryP99    float64 `json:"delivery_p99_us"`
	DrainSeconds   float64 `json:"drain_seconds"`
	LateP50        float64 `json:"late_p50_us"` // open loop: how late publishes started (-1: closed loop)
	LateP99        float64 `json:"late_p99_us"`
}

func percentile(sorted []int64, share float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	i := min(len(sorted)-1, int(float64(len(sorted))*share))
	return float64(sorted[i]) / 1e3
}

var runs atomic.Int64

func execute(c *clients, cmd command) (result, error) {
	publish, err := c.publisher(cmd.Backend, cmd.Path, cmd.Pubsub, cmd.Topic)
	if err != nil {
		return result{}, err
	}
	if cmd.PayloadBytes == 0 {
		cmd.PayloadBytes = 128
	}
	start := now()
	measureFrom := start + int64(cmd.Warmup*1e9)
	end := measureFrom + int64(cmd.Seconds*1e9)
	r := &run{id: runs.Add(1), measureFrom: measureFrom}
	current.Store(r)

	var (
		mu         sync.Mutex
		latencies  []int64
		lateMu     sync.Mutex
		lateness   []int64      // open loop: how late each measured publish started
		total      atomic.Int64 // successful publishes, warm-up included
		errCount   atomic.Int64
		firstError atomic.Value
	)
	// scheduled: when an open loop's publish was due (0 in a closed loop). Latency counts
	// from the send: the Go timer wakes up to a millisecond late here, which would swamp a
	// latency counted from the due time, for both paths alike. How late each send was is
	// reported apart (late_p50_us, late_p99_us), so that a path whose load delays the
	// generator more (coordinated omission) shows.
	one := func(local *[]int64, scheduled int64) {
		sent := now()
		if scheduled != 0 && sent >= measureFrom && sent < end {
			lateMu.Lock()
			lateness = append(lateness, sent-scheduled)
			lateMu.Unlock()
		}
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		err := publish(ctx, payload(r.id, sent, cmd.PayloadBytes))
		done := now()
		cancel()
		if err != nil {
			errCount.Add(1)
			firstError.CompareAndSwap(nil, err.Error())
			return
		}
		total.Add(1)
		if sent >= measureFrom && sent < end {
			*local = append(*local, done-sent)
		}
	}
	var wg sync.WaitGroup
	if cmd.Rate > 0 { // open loop: each publish starts at its time, whatever the others do
		interval := float64(time.Second) / cmd.Rate
		for i := 0; ; i++ {
			at := start + int64(float64(i)*interval)
			if at >= end {
				break
			}
			if wait := at - now(); wait > 0 {
				time.Sleep(time.Duration(wait))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				var local []int64
				one(&local, at)
				if len(local) > 0 {
					mu.Lock()
					latencies = append(latencies, local...)
					mu.Unlock()
				}
			}()
		}
	} else { // closed loop: in_flight publishers, each publishing again as soon as answered
		for range max(1, cmd.InFlight) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := make([]int64, 0, 1<<14)
				for now() < end {
					one(&local, 0)
				}
				mu.Lock()
				latencies = append(latencies, local...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	published := now()

	out := result{
		Published:      int64(len(latencies)),
		PublishedTotal: total.Load(),
		Errors:         errCount.Load(),
		Seconds:        cmd.Seconds,
		PerSecond:      float64(len(latencies)) / cmd.Seconds,
	}
	if e, ok := firstError.Load().(string); ok {
		out.FirstError = e
	}
	slices.Sort(latencies)
	out.PublishP50, out.PublishP99, out.PublishP999 = percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 0.999)
	slices.Sort(lateness)
	out.LateP50, out.LateP99 = percentile(lateness, 0.5), percentile(lateness, 0.99)
	if cmd.Deliver {
		deadline := published + int64(cmd.DrainSeconds*1e9)
		for r.delivered.Load() < out.PublishedTotal && now() < deadline {
			time.Sleep(time.Millisecond)
		}
		out.DrainSeconds = float64(now()-published) / 1e9
	}
	current.Store(nil)
	r.mu.Lock()
	delivery := r.delivery
	r.mu.Unlock()
	out.Delivered = r.delivered.Load()
	if last := r.last.Load(); last > start {
		out.DeliveredRate = float64(out.Delivered) / (float64(last-start) / 1e9)
	}
	if cmd.Deliver {
		out.Undelivered = max(0, out.PublishedTotal-out.Delivered)
	}
	slices.Sort(delivery)
	out.DeliveryP50, out.DeliveryP99 = percentile(delivery, 0.5), percentile(delivery, 0.99)
	return out, nil
}

// --- the grpc-go floor -----------------------------------------------------------------------------

// serveGetStateFloor serves Layotto's GetState with grpc-go's server, answering an empty response
// whatever the request holds: what the gRPC hop costs when grpc-go is the server, beside the
// native front's own floor. It prints the address bound, then serves until killed.
func serveGetStateFloor(address string) error {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	server := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "spec.proto.runtime.v1.Runtime",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "GetState", Handler: func(_ any, _ context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var request []byte
			if err := decode(&request); err != nil {
				return nil, err
			}
			response := []byte{}
			return &response, nil
		}}},
	}, struct{}{})
	fmt.Println(listener.Addr().String())
	return server.Serve(listener)
}

// --- main ---------------------------------------------------------------------------------------

func main() {
	sidecar := flag.String("sidecar", "", "the sidecar's gRPC address (host:port)")
	appPort := flag.Int("app-port", 0, "port of the AppCallback server the sidecar dials (0: none)")
	subscribe := flag.String("subscribe", "", "comma-separated pubsub/topic the app subscribes to through the sidecar")
	redisAddr := flag.String("redis", "", "redis-server host:port for the direct path")
	redisTopic := flag.String("redis-topic", "", "stream the direct Redis consumer reads")
	natsURL := flag.String("nats", "", "nats-server URL for the direct path")
	natsTopic := flag.String("nats-topic", "", "subject the direct JetStream consumer reads")
	echoAddr := flag.String("echo", "", "a bare TCP echo server host:port for the echo path")
	floorAddr := flag.String("grpc-floor", "", "a gRPC server answering GetState without any work, for the floor path")
	goFloorAddr := flag.String("grpc-go-floor", "", "a pubload --serve-floor process, for the go-floor path")
	serveFloor := flag.String("serve-floor", "", "only serve GetState with grpc-go, answering without any work, "+
		"on this host:port (port 0: any); prints the address bound")
	flag.Parse()
	if *serveFloor != "" {
		if err := serveGetStateFloor(*serveFloor); err != nil {
			fmt.Fprintf(os.Stderr, "pubload: floor server: %v\n", err)
			os.Exit(1)
		}
		return
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "pubload: %s: %v\n", what, err)
		os.Exit(1)
	}
	c := &clients{}
	if *appPort != 0 {
		var subs []string
		if *subscribe != "" {
			subs = strings.Split(*subscribe, ",")
		}
		server, err := serveCallback(*appPort, subs)
		if err != nil {
			fail("callback server", err)
		}
		defer server.Stop()
	}
	for _, target := range []struct {
		address string
		conn    **grpc.ClientConn
	}{{*sidecar, &c.sidecar}, {*floorAddr, &c.floor}, {*goFloorAddr, &c.goFloor}} {
		if target.address == "" {
			continue
		}
		conn, err := grpc.NewClient(target.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fail("gRPC client of "+target.address, err)
		}
		conn.Connect()
		*target.conn = conn
	}
	if *echoAddr != "" {
		c.echo = &echoPool{address: *echoAddr, idle: make(chan net.Conn, 128)}
	}
	if *redisAddr != "" {
		// Publishers get a connection each at 64 in flight, as an app with a pool would.
		c.redis = redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 128, DisableIdentity: true})
		consumer := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 4, DisableIdentity: true})
		if *redisTopic != "" {
			if err := consumeRedis(ctx, consumer, *redisTopic); err != nil {
				fail("redis consumer", err)
			}
		}
	}
	if *natsURL != "" {
		nc, err := nats.Connect(*natsURL, nats.Name("pubload"))
		if err != nil {
			fail("nats", err)
		}
		c.nats = nc
		if c.js, err = jetstream.New(nc); err != nil {
			fail("jetstream", err)
		}
		if *natsTopic != "" {
			consume, err := consumeJetStream(ctx, c.js, *natsTopic)
			if err != nil {
				fail("jetstream consumer", err)
			}
			defer consume.Stop()
		}
	}

	encoder := json.NewEncoder(os.Stdout)
	_ = encoder.Encode(map[string]any{"ready": true})
	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		var cmd command
		if err := json.Unmarshal(scanner.Bytes(), &cmd); err != nil {
			_ = encoder.Encode(map[string]any{"error": "bad command: " + err.Error()})
			continue
		}
		out, err := execute(c, cmd)
		if err != nil {
			_ = encoder.Encode(map[string]any{"error": err.Error()})
			continue
		}
		_ = encoder.Encode(out)
	}
}
