package interop;

import com.alipay.remoting.BizContext;
import com.alipay.remoting.rpc.RpcServer;
import com.alipay.remoting.rpc.protocol.SyncUserProcessor;

/**
 * A plain SOFA Bolt server (bolt's own {@code RpcServer}, no SOFARPC) on 127.0.0.1:PORT that answers each
 * {@code String} request with {@code "echo:" + request}, in the Bolt protocol version the request came in; a
 * request {@code "fail:REASON"} throws {@code IllegalStateException(REASON)}, which bolt answers with status
 * SERVER_EXCEPTION.
 * Prints {@code READY} once listening, then serves until killed.
 *
 * <p>Usage: {@code java -cp sofa-peers.jar interop.BoltEchoServer PORT}
 */
public final class BoltEchoServer {
    private BoltEchoServer() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: BoltEchoServer PORT");
            System.exit(2);
        }
        Quiet.logging();
        RpcServer server = new RpcServer("127.0.0.1", Integer.parseInt(args[0]), false);
        server.registerUserProcessor(new SyncUserProcessor<String>() {
            @Override
            public Object handleRequest(BizContext context, String request) {
                if (request.startsWith("fail:")) {
                    throw new IllegalStateException(request.substring("fail:".length()));
                }
                return "echo:" + request;
            }

            @Override
            public String interest() {
                return String.class.getName();
            }
        });
        server.startup();
        System.out.println("READY");
        System.out.flush();
        Thread.currentThread().join();
    }
}
