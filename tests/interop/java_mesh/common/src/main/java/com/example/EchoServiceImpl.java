package com.example;

import java.util.ArrayList;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What both providers serve: the argument, unchanged; or, from {@code fail}, an exception; or, from
 * {@code greet}, a greeting with one field of each kind, fixed but for what the caller sent.
 */
public final class EchoServiceImpl implements EchoService {
    @Override
    public String echo(String text) {
        return text;
    }

    @Override
    public String fail(String reason) {
        throw new IllegalStateException(reason);
    }

    @Override
    public Greeting greet(Greeting greeting) {
        Greeting answer = new Greeting();
        answer.setText(greeting.getText() + "!");
        answer.setCount(greeting.getCount() + 1);
        answer.setTotal(1L << 40);
        answer.setRatio(0.25);
        answer.setLoud(true);
        answer.setAt(new Date(1700000000123L));
        List<String> tags = new ArrayList<>(greeting.getTags() == null ? List.of() : greeting.getTags());
        tags.add("seen");
        answer.setTags(tags);
        Map<String, Integer> scores = new LinkedHashMap<>();
        scores.put("first", 1);
        scores.put("second", -2);
        answer.setScores(scores);
        answer.setPrevious(greeting);
        return answer;
    }
}
