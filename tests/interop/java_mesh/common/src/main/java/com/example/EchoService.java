package com.example;

/** The interface both frameworks serve through the mesh (the same name in sofa/ and dubbo/). */
public interface EchoService {
    String echo(String text);

    /** Always throws, with {@code reason} as the message: how a provider's failure travels back. */
    String fail(String reason);

    /** A new greeting built from {@code greeting}, which it keeps as {@code previous}. */
    Greeting greet(Greeting greeting);
}
