"""ARM on this host: the Debian arm64 guest root, the exact instruction meter, the peer runtimes in the guest."""
