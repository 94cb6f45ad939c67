"""MetaSchedule tuning: the database folder (:mod:`.database`), persistent build workers
(:mod:`.builder`), where candidates are measured (:mod:`.rpc`, :mod:`.emulated_runner`) and the
resumable loop (:mod:`.loop`)."""
