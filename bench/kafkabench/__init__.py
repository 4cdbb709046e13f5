"""The experiments of bench/kafka.py, one module each: (a) ``ceiling``, (b) ``engine``, (c)
``latency``, (d) ``restore``, (t) ``tracing``, the ``profile`` summary; ``common`` holds the run,
its workers and its inputs. bench/kafka.py is the script: its options, the run, the table."""
