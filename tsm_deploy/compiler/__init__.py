"""The compiler: the prepare pipeline shared by compile and tune (:mod:`.pipeline`, :mod:`.passes`),
tuning records applied per kernel (:mod:`.records`, :mod:`.derived`, :mod:`.data_movement`), the
build (:mod:`.build`) and the artifact (:mod:`.artifact`)."""
