"""The application file for ``spark-submit``: the ``imgfeat`` command line, run by Spark's driver.

spark-submit runs Python applications given as ``.py`` files (not console scripts), so::

    spark-submit [spark options] $(python -c 'import imgfeat_loader.spark_app as a; print(a.__file__)') \\
        --dsn DSN spark featurize --files GLOB --target TABLE

or, simpler, ``spark-submit $(imgfeat spark pack --spark-submit) --dsn DSN spark featurize ...``,
which also ships the executors' environment and the JDBC driver. The arguments are the
``imgfeat`` command's; the master and the Spark settings are spark-submit's.
"""

import sys

from imgfeat_loader.cli import main

if __name__ == "__main__":
    sys.exit(main())
