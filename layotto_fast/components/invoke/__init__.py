"""InvokeService's channels (http, bolt, dubbo) and the filters the package ships."""
