package com.example;

/** What both providers serve: the argument, unchanged; or, from {@code fail}, an exception. */
public final class EchoServiceImpl implements EchoService {
    @Override
    public String echo(String text) {
        return text;
    }

    @Override
    public String fail(String reason) {
        throw new IllegalStateException(reason);
    }
}
