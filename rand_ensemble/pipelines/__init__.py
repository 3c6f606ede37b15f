"""Apache Beam jobs, imported only when a job runs (`commands.run_render`, `run_weak_labels`).

    commands.py        the CLI's one call per job: checks, then the job, then its summary
    render_job.py      render (object, view) pairs to Parquet shards (render_process: a render
                       in a child process with a time limit)
    weak_label_job.py  embed, search (exact tiles: neighbours.py; approximate IVF lists:
                       approx_search.py), pairs-*.parquet and summary.json
    sources.py  schema.py  common.py  checks.py  local_services.py   inputs, Parquet schemas,
                       runner-neutral plumbing, argument checks, loopback servers for tests
"""
