"""Deploy targets: the target files, one architecture registry, the record libraries, what this machine has."""
