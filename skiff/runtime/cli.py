"""skiff-runtime: placeholder replaced by the real CLI in this change."""
def main() -> int:
    return 0
