"""shoal on a Slurm cluster: Slurm is the demand source, and its power saving or shoal's planner
decides which nodes run. Everything that knows Slurm is here (``providers`` knows clouds).

``client``      SlurmClient: squeue, sinfo and scontrol as asyncio subprocesses
``errors``      the client's typed errors (SlurmUnavailableError is retryable)
``parse``       their output as records (SlurmJob, SlurmNode), pure
``demand``      records -> shoal's Demand (queued, running, joined, draining), pure
``constants``   the output formats, job reasons and states, the drain reason, the tag names
``source``      SlurmDemandSource: squeue and sinfo every poll interval (and at once after a
                resume request) -> DemandUpdate, or DemandFailure when Slurm cannot be read
``power``       PowerSaver: the power-saving requests (resume, suspend, resume-fail) the
                hooks hand over, launched and terminated through the executor; kept in a
                state file across restarts; failed launches keep the node DOWN, then
                POWER_DOWN it
``cleanup``     the clean-up loop: orphan instances, nodes stuck powering up, down nodes
                without an instance, deleted dynamic nodes
``drain``       SlurmDrainHook: drain and undrain with scontrol (external mode)
``names``       Slurm node names -> node types (slurm.node_types, or derived from node_types)
``conf``        the slurm.conf lines of ``shoal slurm-conf``, from the planner's policy
``state``       the state file
``metrics``     SlurmMetrics: the shoal_slurm_* collectors, on the daemon's registry
``integration`` SlurmIntegration: wires the above into the daemon (source, routes, tasks)
``hook``        the ``shoal slurm-resume`` / ``slurm-suspend`` commands: stdlib only, so they
                return in milliseconds
``spool``       where a hook leaves a request the daemon did not answer, served once when it
                is back

This package imports nothing at import time, so the hook commands stay fast.
"""
