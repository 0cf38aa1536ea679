"""gunicorn's settings for a PaidUp web node, read from the environment (docs/deploy.md, 7 and 14).

`gunicorn -c gunicorn.conf.py config.wsgi` (the Procfile's web line, `make cluster`'s web nodes).
Each value has a variable so that one committed file serves every node and platform:

- GUNICORN_BIND: address to listen on (default 127.0.0.1:8000; a platform that gives $PORT gets
  0.0.0.0:$PORT). Bind to loopback or a private network only: the proxy is the public side.
- WEB_CONCURRENCY: worker processes (default 2; the name platforms such as Heroku set).
- GUNICORN_THREADS: threads per worker (default 4): a checkout waits on Stripe, not on the CPU.
- FORWARDED_ALLOW_IPS: proxies whose X-Forwarded-* headers gunicorn believes (default 127.0.0.1).

With PROMETHEUS_MULTIPROC_DIR set (config/metrics.py, docs/deploy.md "Metrics"), every worker
writes its request counts into files there; `child_exit` tells prometheus-client when a worker
is gone so that its live gauges stop counting (its counters stay: they are totals). The folder
must be emptied before the node starts (systemd: ExecStartPre; tools/cluster.py does it).
"""

import os

_port = os.environ.get("PORT")
bind = os.environ.get("GUNICORN_BIND") or (f"0.0.0.0:{_port}" if _port else "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A checkout waits for Stripe (up to its retries); 30 s is gunicorn's default and enough.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn 27 opens a control socket per user by default (~/.gunicorn/gunicorn.ctl): two nodes
# under one user would share it (docs/deploy.md, 7).
control_socket_disable = True
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
access_log_format = '%({x-forwarded-for}i)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s"'
errorlog = os.environ.get("GUNICORN_ERROR_LOG", "-")


def child_exit(server, worker) -> None:
    """Called in the master when a worker exits (cleanly or killed): mark its metrics dead."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
