"""The compiler side after the prepared module: tuning records applied per kernel (:mod:`.records`),
schedules carried over from the nearest tuned kernel where no record exists (:mod:`.derived`)."""
