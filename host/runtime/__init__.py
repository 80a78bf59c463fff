"""The host runtime: query traces (:mod:`.trace`); the backends, schedulers and replay of issue 21 build on them."""
