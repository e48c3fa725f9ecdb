"""Implementations of the pubsub building block, one module each."""

# The consumer group of a component whose manifest gives no consumerID. A sidecar never
# gets here: the runtime fills consumerID with the app id first (with_consumer_groups).
# Only a component built on its own (``layotto-fast check``, tests) falls back to this,
# which is the app id a sidecar has without --app-id, so both ways read the same.
DEFAULT_GROUP = "layotto-fast"
