package interop;

import com.example.EchoService;
import com.example.EchoServiceImpl;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ProtocolConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.ServiceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;

/**
 * An Apache Dubbo provider of {@link EchoService}, version 1.0, over the dubbo protocol with hessian2
 * serialization on 127.0.0.1:PORT, with no registry ("N/A") and no QoS server. {@code echo} answers its
 * argument unchanged, {@code fail} throws. Prints {@code READY} once listening, then serves until killed.
 *
 * <p>Usage: {@code java -cp dubbo-peers.jar interop.DubboProvider PORT}
 */
public final class DubboProvider {
    private DubboProvider() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: DubboProvider PORT");
            System.exit(2);
        }
        Quiet.logging();
        ApplicationConfig application = new ApplicationConfig("interop-dubbo-provider");
        application.setQosEnable(false);
        ProtocolConfig protocol = new ProtocolConfig("dubbo", Integer.parseInt(args[0]));
        protocol.setHost("127.0.0.1");
        protocol.setSerialization("hessian2");
        protocol.setPreferSerialization("hessian2");
        ServiceConfig<EchoService> service = new ServiceConfig<>();
        service.setInterface(EchoService.class);
        service.setRef(new EchoServiceImpl());
        service.setVersion("1.0");
        DubboBootstrap.getInstance()
            .application(application)
            .registry(new RegistryConfig(RegistryConfig.NO_AVAILABLE))
            .protocol(protocol)
            .service(service)
            .start();
        System.out.println("READY");
        System.out.flush();
        Thread.currentThread().join();
    }
}
