package interop;

import java.lang.reflect.Field;
import java.net.InetAddress;
import org.apache.dubbo.common.utils.NetUtils;

/** Settings that must be in place before Dubbo or slf4j initialise (the name is for the logging ones). */
final class Quiet {
    private Quiet() {}

    /** Held so that java.util.logging does not forget the level set on it. */
    private static final java.util.logging.Logger JUL_ROOT = java.util.logging.Logger.getLogger("");

    static void logging() {
        JUL_ROOT.setLevel(java.util.logging.Level.SEVERE);
        // slf4j-simple: warnings and errors only, on stderr; stdout carries READY / the JSON report
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        System.setProperty("dubbo.application.logger", "slf4j");
        // no QoS telnet server (it would listen on 22222 in every JVM)
        System.setProperty("dubbo.application.qos-enable", "false");
        // a test peer: on SIGTERM stop at once instead of Dubbo's graceful wait (seconds)
        System.setProperty("dubbo.service.shutdown.wait", "100");
        loopbackOnly();
    }

    /**
     * Dubbo treats every 127.x address as "no address given" ({@code NetUtils.isInvalidLocalHost}): a client
     * told to connect to 127.0.0.1 connects to {@code NetUtils.getLocalHost()} instead, the first non-loopback
     * interface address it finds (probing each with {@code isReachable}). These peers must only ever talk over
     * loopback, so Dubbo's cached local address is pinned to 127.0.0.1 before anything asks for it; then
     * {@code filterLocalHost("127.0.0.1")} stays 127.0.0.1 and no interface is probed. (A provider asked to
     * listen on a 127.x host still binds 0.0.0.0: {@code AbstractServer} does that for any such host.)
     */
    private static void loopbackOnly() {
        try {
            InetAddress loopback = InetAddress.getByAddress("localhost", new byte[] {127, 0, 0, 1});
            pin("LOCAL_ADDRESS", loopback);
            pin("HOST_ADDRESS", "127.0.0.1");
        } catch (ReflectiveOperationException | java.net.UnknownHostException error) {
            throw new IllegalStateException("cannot pin Dubbo's local address to 127.0.0.1", error);
        }
        if (!"127.0.0.1".equals(NetUtils.getLocalHost())) {
            throw new IllegalStateException("Dubbo's local host is " + NetUtils.getLocalHost() + ", not 127.0.0.1");
        }
    }

    private static void pin(String name, Object value) throws ReflectiveOperationException {
        Field field = NetUtils.class.getDeclaredField(name);
        field.setAccessible(true);
        field.set(null, value);
    }
}
