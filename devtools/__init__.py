"""Development tooling: the embedded stack (`make run`), its Redis and mail catcher, process
groups, and the migration generator. Not shipped in the services' image."""
