"""RQ workers: load models once, run forward -> LRP -> masks -> metrics -> artifacts per job."""
