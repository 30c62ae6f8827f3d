"""One router per resource; each declares the small Backend protocol it needs."""
