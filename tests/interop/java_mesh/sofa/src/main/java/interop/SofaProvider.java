package interop;

import com.alipay.sofa.rpc.config.ProviderConfig;
import com.alipay.sofa.rpc.config.ServerConfig;
import com.example.EchoService;
import com.example.EchoServiceImpl;

/**
 * A SOFARPC provider of {@link EchoService} (version 1.0, no uniqueId) over Bolt on 127.0.0.1:PORT, with no
 * registry. {@code echo} answers its argument unchanged, {@code fail} throws. Prints {@code READY} once
 * listening, then serves until killed.
 *
 * <p>Usage: {@code java -cp sofa-peers.jar interop.SofaProvider PORT}
 */
public final class SofaProvider {
    private SofaProvider() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: SofaProvider PORT");
            System.exit(2);
        }
        Quiet.logging();
        ServerConfig server = new ServerConfig()
            .setProtocol("bolt")
            .setHost("127.0.0.1")
            .setBoundHost("127.0.0.1")
            .setPort(Integer.parseInt(args[0]))
            .setDaemon(false);
        ProviderConfig<EchoService> provider = new ProviderConfig<EchoService>()
            .setInterfaceId(EchoService.class.getName())
            .setRef(new EchoServiceImpl())
            .setServer(server)
            .setRegister(false);
        provider.export();
        System.out.println("READY");
        System.out.flush();
        Thread.currentThread().join();
    }
}
