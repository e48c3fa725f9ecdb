package interop;

import com.example.EchoService;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.RpcException;

/**
 * An Apache Dubbo consumer of {@link EchoService} that calls {@code dubbo://HOST:PORT} directly (no registry,
 * dubbo protocol 2.0.2 frames, hessian2) N times with "echo-0" .. "echo-{N-1}" and prints one JSON line:
 * {@code {"replies": [...], "error": null | {"type", "message", "code"}, "elapsed_ms": ms of the calls}}.
 * The first failed call ends the run and is reported under "error" (exit status still 0).
 *
 * <p>Options after N, as key=value:
 * <ul>
 *   <li>{@code version=V}: the service version asked for (default 1.0; another one is routed nowhere);</li>
 *   <li>{@code idleMs=T}: after the first half of the calls, sit idle for T ms on the open connection;</li>
 *   <li>{@code heartbeatMs=T}: Dubbo's {@code heartbeat} parameter (default 60000): an idle connection gets a
 *       heartbeat request after that long;</li>
 *   <li>{@code timeoutMs=T}: per-call timeout (default 3000);</li>
 *   <li>{@code method=fail}: call {@code fail} instead of {@code echo} (the provider throws; the first
 *       call's error is the report's).</li>
 * </ul>
 *
 * <p>Usage: {@code java -cp dubbo-peers.jar interop.DubboConsumer HOST PORT N [key=value ...]}
 */
public final class DubboConsumer {
    private DubboConsumer() {}

    public static void main(String[] args) {
        if (args.length < 3) {
            System.err.println("usage: DubboConsumer HOST PORT N [version=V] [idleMs=T] [heartbeatMs=T] [timeoutMs=T] [method=fail]");
            System.exit(2);
        }
        Quiet.logging();
        Map<String, String> options = EchoCalls.options(args, 3);
        int n = Integer.parseInt(args[2]);
        long idleMs = Long.parseLong(options.getOrDefault("idleMs", "0"));

        ApplicationConfig application = new ApplicationConfig("interop-dubbo-consumer");
        application.setQosEnable(false);
        ReferenceConfig<EchoService> reference = new ReferenceConfig<>();
        reference.setInterface(EchoService.class);
        reference.setVersion(options.getOrDefault("version", "1.0"));
        reference.setUrl("dubbo://" + args[0] + ":" + args[1]);
        reference.setTimeout(Integer.parseInt(options.getOrDefault("timeoutMs", "3000")));
        reference.setRetries(0);
        reference.setCheck(false);
        Map<String, String> parameters = new LinkedHashMap<>();
        parameters.put("serialization", "hessian2");
        parameters.put("heartbeat", options.getOrDefault("heartbeatMs", "60000"));
        reference.setParameters(parameters);

        EchoCalls.runAndReport(() -> {
            DubboBootstrap.getInstance().application(application).reference(reference).start();
            return reference.get();
        }, n, idleMs, options.getOrDefault("method", "echo"), "code", error -> error instanceof RpcException e ? e.getCode() : null);
    }
}
