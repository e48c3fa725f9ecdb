package interop;

/** Settings that must be in place before SOFARPC, bolt or slf4j initialise. */
final class Quiet {
    private Quiet() {}

    /** Held so that java.util.logging does not forget the level set on it. */
    private static final java.util.logging.Logger JUL_ROOT = java.util.logging.Logger.getLogger("");

    static void logging() {
        // hessian's notices about JDK 17 module access (java --add-opens=java.base/java.lang=ALL-UNNAMED avoids them)
        JUL_ROOT.setLevel(java.util.logging.Level.SEVERE);
        // slf4j-simple: warnings and errors only, on stderr; stdout carries READY / the JSON report
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        // bolt's one-line notice of its netty water marks, logged at WARN on every start
        System.setProperty("org.slf4j.simpleLogger.log.com.alipay.sofa.common.log", "error");
        // sofa-common-tools' own notices ("No log util is usable, Default app logger will be used")
        System.setProperty("sofa.middleware.log.internal.level", "ERROR");
        // no SOFATracer: it would write digest and stat logs under ${logging.path} (default ~/logs/tracelog)
        // (RpcConfigs takes system properties over its rpc-config-default.json)
        System.setProperty("default.tracer", "");
    }
}
