"""The helper's gRPC server: caller identity from the kernel, tokens, authorization, the Session contract."""
