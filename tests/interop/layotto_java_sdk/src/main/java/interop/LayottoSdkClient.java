package interop;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.CodedOutputStream;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.MethodDescriptor;
import io.grpc.stub.ClientCalls;
import io.mosn.layotto.v1.RuntimeClientBuilder;
import io.mosn.layotto.v1.grpc.GrpcRuntimeClient;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import spec.proto.runtime.v1.RuntimeGrpc;
import spec.proto.runtime.v1.RuntimeProto;
import spec.sdk.runtime.v1.domain.sequencer.GetNextIdRequest;
import spec.sdk.runtime.v1.domain.sequencer.SequencerOptions;
import spec.sdk.runtime.v1.domain.state.State;

/**
 * Drives a Layotto runtime (here: layotto-fast) with Layotto's own published Java artifacts,
 * io.mosn.layotto:runtime-sdk:1.1.0 and io.mosn.layotto:runtime-spec-pb:1.1.0 from Maven Central.
 *
 * <p>The SDK's RuntimeClient is used where it has a method (state, sequencer); everything else goes
 * through the generated RuntimeGrpc blocking stub of runtime-spec-pb, on the SDK's own channel.
 * GetSecret is newer than the 1.1.0 stubs (they have no secret messages or method), so it is called
 * with a hand-written MethodDescriptor "spec.proto.runtime.v1.Runtime/GetSecret" whose request and
 * response are encoded with protobuf-java's CodedOutputStream/CodedInputStream.
 *
 * <p>Usage: {@code java -jar layotto-java-sdk-client.jar HOST PORT}. Prints one JSON line and exits 0;
 * on any error prints it to stderr and exits 1.
 */
public final class LayottoSdkClient {
    static {
        // the SDK logs through slf4j; keep stdout for the JSON report and stderr for real problems
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
    }

    private static final int TIMEOUT_MS = 10_000;

    private LayottoSdkClient() {}

    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: LayottoSdkClient HOST PORT");
            System.exit(2);
        }
        String report;
        try {
            report = run(args[0], Integer.parseInt(args[1]));
        } catch (Throwable error) {
            error.printStackTrace();
            System.exit(1);
            return;
        }
        System.out.println(report);
        System.out.flush();
        System.exit(0);
    }

    static String run(String host, int port) {
        GrpcRuntimeClient client = new RuntimeClientBuilder()
                .withIp(host)
                .withPort(port)
                .withTimeout(TIMEOUT_MS)
                .buildGrpc();
        try {
            return exercise(client);
        } finally {
            client.shutdown();
        }
    }

    private static RuntimeGrpc.RuntimeBlockingStub stub(GrpcRuntimeClient client) {
        return client.getStubManager().getBlockingStub().withDeadlineAfter(TIMEOUT_MS, TimeUnit.MILLISECONDS);
    }

    private static String exercise(GrpcRuntimeClient client) {
        Json out = new Json();

        // SayHello: the SDK's sayHello(String) puts its argument into both service_name and name,
        // so the stub is used to send service_name "helloworld" with name "java".
        RuntimeProto.SayHelloResponse hello = stub(client).sayHello(
                RuntimeProto.SayHelloRequest.newBuilder().setServiceName("helloworld").setName("java").build());
        out.field("hello").string(hello.getHello());

        // State through the SDK; its default serializer writes a String as its raw UTF-8 bytes,
        // which the generated stub's GetState then reads back unchanged
        client.saveState("in-memory", "java-k", "java-v");
        State<String> state = client.getState("in-memory", "java-k", String.class);
        out.field("state").string(state.getValue());
        RuntimeProto.GetStateResponse raw = stub(client).getState(
                RuntimeProto.GetStateRequest.newBuilder().setStoreName("in-memory").setKey("java-k").build());
        out.field("state_raw").string(raw.getData().toStringUtf8());

        // Lock: the 1.1.0 SDK's LockRuntime has no methods, so the generated stub is used
        RuntimeProto.TryLockResponse lock = stub(client).tryLock(RuntimeProto.TryLockRequest.newBuilder()
                .setStoreName("lock_demo").setResourceId("java-r").setLockOwner("j1").setExpire(5).build());
        out.field("trylock").bool(lock.getSuccess());
        RuntimeProto.UnlockResponse unlock = stub(client).unlock(RuntimeProto.UnlockRequest.newBuilder()
                .setStoreName("lock_demo").setResourceId("java-r").setLockOwner("j1").build());
        out.field("unlock").string(unlock.getStatus().name());

        // Sequencer through the SDK. Its getNextId needs explicit options: without them the 1.1.0 SDK
        // passes a null AutoIncrement to the generated builder and throws NullPointerException client-side.
        out.field("ids").beginArray();
        for (int i = 0; i < 2; i++) {
            GetNextIdRequest request = new GetNextIdRequest();
            request.setStoreName("sequencer_demo");
            request.setKey("java-seq");
            SequencerOptions options = new SequencerOptions();
            options.setOption(SequencerOptions.AutoIncrement.WEAK);
            request.setOptions(options);
            out.number(client.getNextId(request).getNextId());
        }
        out.endArray();

        // Secret: not in the 1.1.0 stubs, see getSecret below
        out.field("secret").beginObject();
        for (Map.Entry<String, String> entry : getSecret(client, "secret_demo", "redis:user").entrySet()) {
            out.field(entry.getKey()).string(entry.getValue());
        }
        out.endObject();

        // Configuration: the 1.1.0 SDK's ConfigurationRuntime has no methods, so the generated stub is used
        stub(client).saveConfiguration(RuntimeProto.SaveConfigurationRequest.newBuilder()
                .setStoreName("config_demo")
                .setAppId("japp")
                .addItems(RuntimeProto.ConfigurationItem.newBuilder()
                        .setKey("java-cfg").setContent("c1").setGroup("g").setLabel("l").build())
                .build());
        RuntimeProto.GetConfigurationResponse config = stub(client).getConfiguration(
                RuntimeProto.GetConfigurationRequest.newBuilder()
                        .setStoreName("config_demo").setAppId("japp").setGroup("g").setLabel("l")
                        .addKeys("java-cfg").build());
        out.field("config").beginArray();
        for (RuntimeProto.ConfigurationItem item : config.getItemsList()) {
            out.beginObject();
            out.field("key").string(item.getKey());
            out.field("content").string(item.getContent());
            out.field("group").string(item.getGroup());
            out.field("label").string(item.getLabel());
            out.endObject();
        }
        out.endArray();

        return out.finish();
    }

    // ---- GetSecret without generated classes -------------------------------------------------

    private static final MethodDescriptor.Marshaller<byte[]> BYTES = new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(byte[] value) {
            return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (IOException error) {
                throw new UncheckedIOException(error);
            }
        }
    };

    private static final MethodDescriptor<byte[], byte[]> GET_SECRET = MethodDescriptor.<byte[], byte[]>newBuilder()
            .setType(MethodDescriptor.MethodType.UNARY)
            .setFullMethodName(MethodDescriptor.generateFullMethodName(RuntimeGrpc.SERVICE_NAME, "GetSecret"))
            .setRequestMarshaller(BYTES)
            .setResponseMarshaller(BYTES)
            .build();

    /** GetSecretRequest{store_name = 1, key = 2} -> GetSecretResponse{map<string, string> data = 1}. */
    private static Map<String, String> getSecret(GrpcRuntimeClient client, String store, String key) {
        try {
            ByteArrayOutputStream buffer = new ByteArrayOutputStream();
            CodedOutputStream request = CodedOutputStream.newInstance(buffer);
            request.writeString(1, store);
            request.writeString(2, key);
            request.flush();
            Channel channel = client.getStubManager().getChannels()[0];
            byte[] reply = ClientCalls.blockingUnaryCall(channel, GET_SECRET,
                    CallOptions.DEFAULT.withDeadlineAfter(TIMEOUT_MS, TimeUnit.MILLISECONDS), buffer.toByteArray());
            Map<String, String> data = new TreeMap<>();
            CodedInputStream response = CodedInputStream.newInstance(reply);
            for (int tag = response.readTag(); tag != 0; tag = response.readTag()) {
                if (tag != ((1 << 3) | 2)) {
                    response.skipField(tag);
                    continue;
                }
                CodedInputStream entry = CodedInputStream.newInstance(response.readByteArray());
                String entryKey = "";
                String entryValue = "";
                for (int inner = entry.readTag(); inner != 0; inner = entry.readTag()) {
                    if (inner == ((1 << 3) | 2)) {
                        entryKey = entry.readStringRequireUtf8();
                    } else if (inner == ((2 << 3) | 2)) {
                        entryValue = entry.readStringRequireUtf8();
                    } else {
                        entry.skipField(inner);
                    }
                }
                data.put(entryKey, entryValue);
            }
            return data;
        } catch (IOException error) {
            throw new UncheckedIOException(error);
        }
    }

    // ---- a minimal JSON writer ---------------------------------------------------------------

    private static final class Json {
        private final StringBuilder text = new StringBuilder("{");
        private final List<Boolean> first = new ArrayList<>(List.of(Boolean.TRUE));
        private boolean afterKey;

        Json field(String name) {
            separate();
            quote(name);
            text.append(':');
            afterKey = true;
            return this;
        }

        Json string(String value) {
            separate();
            quote(value);
            return this;
        }

        Json bool(boolean value) {
            separate();
            text.append(value);
            return this;
        }

        Json number(long value) {
            separate();
            text.append(value);
            return this;
        }

        Json beginArray() {
            separate();
            text.append('[');
            first.add(Boolean.TRUE);
            return this;
        }

        Json endArray() {
            first.remove(first.size() - 1);
            text.append(']');
            return this;
        }

        Json beginObject() {
            separate();
            text.append('{');
            first.add(Boolean.TRUE);
            return this;
        }

        Json endObject() {
            first.remove(first.size() - 1);
            text.append('}');
            return this;
        }

        String finish() {
            return text.append('}').toString();
        }

        private void separate() {
            if (afterKey) {
                afterKey = false;
                return;
            }
            int top = first.size() - 1;
            if (first.get(top)) {
                first.set(top, Boolean.FALSE);
            } else {
                text.append(',');
            }
        }

        private void quote(String value) {
            text.append('"');
            for (int i = 0; i < value.length(); i++) {
                char c = value.charAt(i);
                switch (c) {
                    case '"' -> text.append("\\\"");
                    case '\\' -> text.append("\\\\");
                    case '\n' -> text.append("\\n");
                    case '\r' -> text.append("\\r");
                    case '\t' -> text.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            text.append(String.format("\\u%04x", (int) c));
                        } else {
                            text.append(c);
                        }
                    }
                }
            }
            text.append('"');
        }
    }
}
