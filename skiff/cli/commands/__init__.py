"""One module per family of commands; each exports ``cmd_<name>(cli, argv) -> int``."""
