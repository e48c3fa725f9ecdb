package interop;

import com.example.EchoService;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Function;

/** What both consumers do once they have an {@link EchoService}: the calls, and the one-line JSON report. */
public final class EchoCalls {
    private EchoCalls() {}

    /** The {@code key=value} options from {@code args[from]} on. */
    public static Map<String, String> options(String[] args, int from) {
        Map<String, String> options = new LinkedHashMap<>();
        for (int i = from; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            options.put(kv[0], kv.length > 1 ? kv[1] : "");
        }
        return options;
    }

    /**
     * Calls {@code echo("echo-0" .. "echo-{n-1}")} (or {@code fail} with those reasons, when {@code method} is
     * "fail") on the service {@code refer} gives, idle for {@code idleMs} after the first half; prints {@code {"replies", "error", "elapsed_ms"}} and halts the JVM (neither
     * framework's client threads are all daemons). The first failure ends the run and is reported under
     * "error" with the framework's own code under {@code codeKey}.
     */
    public static void runAndReport(
            Callable<EchoService> refer, int n, long idleMs, String method, String codeKey,
            Function<Throwable, Object> code) {
        boolean fail = "fail".equals(method);
        Map<String, Object> report = new LinkedHashMap<>();
        List<String> replies = new ArrayList<>();
        report.put("replies", replies);
        report.put("error", null);
        long started = System.nanoTime();
        try {
            EchoService echo = refer.call();
            started = System.nanoTime();
            for (int i = 0; i < n; i++) {
                if (idleMs > 0 && i == n / 2) Thread.sleep(idleMs);
                replies.add(fail ? echo.fail("echo-" + i) : echo.echo("echo-" + i));
            }
        } catch (Throwable error) {
            Map<String, Object> failure = new LinkedHashMap<>();
            failure.put("type", error.getClass().getName());
            failure.put("message", String.valueOf(error.getMessage()));
            failure.put(codeKey, code.apply(error));
            report.put("error", failure);
        }
        report.put("elapsed_ms", (System.nanoTime() - started) / 1_000_000);
        System.out.println(Json.write(report));
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
