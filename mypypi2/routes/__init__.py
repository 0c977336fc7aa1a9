"""HTTP routes: read the request, redirect or negotiate, call one use case, answer."""
