package com.example;

/** What both providers serve: the argument, unchanged. */
public final class EchoServiceImpl implements EchoService {
    @Override
    public String echo(String text) {
        return text;
    }
}
