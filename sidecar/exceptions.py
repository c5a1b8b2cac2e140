"""The sidecar's error tree. Library code raises these; only the CLI turns them into exit codes."""


class SidecarError(Exception):
    """Base class for every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """The configuration is invalid; `problems` lists each one as 'yaml.path: reason'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class SocketInUseError(SidecarError):
    """Another live process is accepting connections on our Unix socket path."""
