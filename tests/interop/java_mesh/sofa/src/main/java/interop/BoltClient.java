package interop;

import com.alipay.remoting.InvokeContext;
import com.alipay.remoting.rpc.RpcClient;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A plain SOFA Bolt client (bolt's own {@code RpcClient}) that sends the {@code String} requests "bolt-0" ..
 * "bolt-{N-1}" to HOST:PORT and prints one JSON line: {@code {"replies": [...], "error": null | {"type",
 * "message"}}}. The first failed call ends the run (exit status still 0).
 *
 * <p>Options after N, as key=value: {@code protocol=1|2} (Bolt v1, the default, or v2, through bolt's
 * {@code _PROTOCOL} URL property); {@code version=1|2} (v2's {@code ver1}, the {@code _VERSION} URL property,
 * default 1); {@code crc=true|false} (the switch's CRC bit, bolt's {@code bolt.invoke.crc.switch}, on by
 * default; bolt writes the CRC32 only for {@code ver1} 2); {@code timeoutMs=T} (default 3000); {@code idleMs=T}
 * (after the first half of the calls, sit idle for T ms on the open connection: with
 * {@code -Dbolt.tcp.heartbeat.interval=MS} below T, bolt's RpcHeartbeatTrigger sends heartbeats meanwhile).
 *
 * <p>Usage: {@code java -cp sofa-peers.jar interop.BoltClient HOST PORT N [protocol=2] [version=2] [crc=false]
 * [timeoutMs=T] [idleMs=T]}
 */
public final class BoltClient {
    private BoltClient() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: BoltClient HOST PORT N [protocol=2] [version=2] [crc=false] [timeoutMs=T] [idleMs=T]");
            System.exit(2);
        }
        Quiet.logging();
        Map<String, String> options = EchoCalls.options(args, 3);
        int n = Integer.parseInt(args[2]);
        int timeoutMs = Integer.parseInt(options.getOrDefault("timeoutMs", "3000"));
        String url = args[0] + ":" + args[1] + "?_PROTOCOL=" + options.getOrDefault("protocol", "1")
            + "&_VERSION=" + options.getOrDefault("version", "1") + "&_CONNECTTIMEOUT=3000";
        boolean crc = Boolean.parseBoolean(options.getOrDefault("crc", "true"));
        long idleMs = Long.parseLong(options.getOrDefault("idleMs", "0"));

        Map<String, Object> report = new LinkedHashMap<>();
        List<Object> replies = new ArrayList<>();
        report.put("replies", replies);
        report.put("error", null);
        RpcClient client = new RpcClient();
        try {
            client.startup();
            for (int i = 0; i < n; i++) {
                if (idleMs > 0 && i == n / 2) Thread.sleep(idleMs);
                InvokeContext context = new InvokeContext();
                context.put(InvokeContext.BOLT_CRC_SWITCH, crc);
                replies.add(client.invokeSync(url, "bolt-" + i, context, timeoutMs));
            }
        } catch (Throwable error) {
            Map<String, Object> failure = new LinkedHashMap<>();
            failure.put("type", error.getClass().getName());
            failure.put("message", String.valueOf(error.getMessage()));
            report.put("error", failure);
        }
        System.out.println(Json.write(report));
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
