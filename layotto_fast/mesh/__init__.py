"""The service-mesh data plane: Bolt and Dubbo listeners, routes and clusters.

The forwarding itself runs in Rust on a thread of its own (``layotto_fast_native.MeshProxy``);
this package validates its configuration, starts, reloads and stops it, and reports it.
"""
