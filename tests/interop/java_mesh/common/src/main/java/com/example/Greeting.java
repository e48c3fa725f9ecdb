package com.example;

import java.io.Serializable;
import java.util.Date;
import java.util.List;
import java.util.Map;

/**
 * A value carrying each kind of field the sidecar's Hessian reader has to follow in a real
 * provider's answer: string, int, long, double, boolean, date, list, map, a nested object and null.
 */
public final class Greeting implements Serializable {
    private static final long serialVersionUID = 1L;

    private String text;
    private int count;
    private long total;
    private double ratio;
    private boolean loud;
    private Date at;
    private List<String> tags;
    private Map<String, Integer> scores;
    private Greeting previous;

    public String getText() { return text; }
    public void setText(String text) { this.text = text; }
    public int getCount() { return count; }
    public void setCount(int count) { this.count = count; }
    public long getTotal() { return total; }
    public void setTotal(long total) { this.total = total; }
    public double getRatio() { return ratio; }
    public void setRatio(double ratio) { this.ratio = ratio; }
    public boolean isLoud() { return loud; }
    public void setLoud(boolean loud) { this.loud = loud; }
    public Date getAt() { return at; }
    public void setAt(Date at) { this.at = at; }
    public List<String> getTags() { return tags; }
    public void setTags(List<String> tags) { this.tags = tags; }
    public Map<String, Integer> getScores() { return scores; }
    public void setScores(Map<String, Integer> scores) { this.scores = scores; }
    public Greeting getPrevious() { return previous; }
    public void setPrevious(Greeting previous) { this.previous = previous; }
}
