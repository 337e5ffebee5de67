"""The `hourglass` command: run components (`dev`, `api`, `worker`, ...) and talk to a server
(`schedule`, `status`, `jobs`, `runs`, `cancel`)."""
