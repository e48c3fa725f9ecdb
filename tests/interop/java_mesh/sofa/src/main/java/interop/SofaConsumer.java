package interop;

import com.alipay.sofa.rpc.config.ConsumerConfig;
import com.alipay.sofa.rpc.core.exception.SofaRpcException;
import com.example.EchoService;
import java.util.Map;

/**
 * A SOFARPC consumer of {@link EchoService} that calls {@code bolt://HOST:PORT} directly (no registry) N times
 * with "echo-0" .. "echo-{N-1}" and prints one JSON line:
 * {@code {"replies": [...], "error": null | {"type", "message", "error_type"}, "elapsed_ms": ...}}.
 * The first failed call ends the run and is reported under "error" (exit status still 0).
 *
 * <p>Options after N, as key=value:
 * <ul>
 *   <li>{@code uniqueId=X}: SOFARPC's uniqueId, so the Bolt "service" header becomes
 *       "com.example.EchoService:1.0:X" (used to call a service no route matches);</li>
 *   <li>{@code version=V}: SOFARPC's service version (default 1.0);</li>
 *   <li>{@code idleMs=T}: after the first half of the calls, sit idle for T ms on the open connection before
 *       the rest (with {@code -Dbolt.tcp.heartbeat.interval=MS} below T, bolt's RpcHeartbeatTrigger sends
 *       heartbeats meanwhile);</li>
 *   <li>{@code timeoutMs=T}: per-call timeout (default 3000);</li>
 *   <li>{@code method=fail}: call {@code fail} instead of {@code echo} (the provider throws; the first
 *       call's error is the report's).</li>
 * </ul>
 *
 * <p>Usage: {@code java -cp sofa-peers.jar interop.SofaConsumer HOST PORT N [key=value ...]}
 */
public final class SofaConsumer {
    private SofaConsumer() {}

    public static void main(String[] args) {
        if (args.length < 3) {
            System.err.println("usage: SofaConsumer HOST PORT N [uniqueId=X] [version=V] [idleMs=T] [timeoutMs=T] [method=fail]");
            System.exit(2);
        }
        Quiet.logging();
        Map<String, String> options = EchoCalls.options(args, 3);
        int n = Integer.parseInt(args[2]);
        long idleMs = Long.parseLong(options.getOrDefault("idleMs", "0"));
        ConsumerConfig<EchoService> consumer = new ConsumerConfig<EchoService>()
            .setInterfaceId(EchoService.class.getName())
            .setProtocol("bolt")
            .setDirectUrl("bolt://" + args[0] + ":" + args[1])
            .setRegister(false)
            .setSubscribe(false)
            .setTimeout(Integer.parseInt(options.getOrDefault("timeoutMs", "3000")))
            .setConnectTimeout(3000);
        if (options.containsKey("uniqueId")) consumer.setUniqueId(options.get("uniqueId"));
        if (options.containsKey("version")) consumer.setVersion(options.get("version"));

        EchoCalls.runAndReport(
            consumer::refer, n, idleMs, options.getOrDefault("method", "echo"), "error_type",
            error -> error instanceof SofaRpcException e ? e.getErrorType() : null);
    }
}
