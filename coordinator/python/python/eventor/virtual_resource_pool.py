"""The names the original's README takes from ``acris.virtual_resource_pool``: a pool is a
named count of units that steps acquire (``acquires=[(pool, n)]``); the engine holds the
count, so a ``Resource`` carries nothing.
"""


class Resource:
    """One unit of a pool (kept for the original's ``resource_cls`` argument)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class ResourcePool:
    """A pool of ``policy['resource_limit']`` units; ``shared=True`` makes it one pool for
    every run on the store (all flows sharing it must give the same limit)."""

    def __init__(self, name, resource_cls=Resource, policy=None, shared=False):
        policy = dict(policy or {})
        limit = policy.get("resource_limit", 1)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError("pool %s: resource_limit must be a positive integer, not %r" % (name, limit))
        self.name = str(name)
        self.resource_cls = resource_cls
        self.policy = policy
        self.resource_limit = limit
        self.shared = bool(shared)

    def load(self):
        """Returns the pool (the original created its resources here)."""
        return self

    def __repr__(self):
        return "ResourcePool(%r, limit=%d%s)" % (self.name, self.resource_limit, ", shared" if self.shared else "")
