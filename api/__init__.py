"""The gRPC API: `hourglass.v1.JobScheduler`, with health checking and server reflection."""
