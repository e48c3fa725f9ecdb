package com.example;

/** The interface both frameworks serve through the mesh (the same name in sofa/ and dubbo/). */
public interface EchoService {
    String echo(String text);
}
