"""Build step of the offline LocalStack image: install what LocalStack would download at first use
where its own installers look (the image's static libraries), so it starts with nothing to fetch.

- kinesis-local, LocalStack's Kinesis engine, with LocalStack's own installer (npm);
- the Lambda runtime init: lambda_init.py (next to this file) in place of the Go binary.
"""

from __future__ import annotations

import os
import shutil

from localstack.packages import InstallTarget
from localstack.services.kinesis.packages import kinesismock_package
from localstack.services.lambda_.packages import lambda_runtime_package

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    kinesismock_package.get_installer().install(target=InstallTarget.STATIC_LIBS)
    installer = lambda_runtime_package.get_installer()
    init = installer._get_install_marker_path(installer._get_install_dir(InstallTarget.STATIC_LIBS))
    os.makedirs(os.path.dirname(init), exist_ok=True)
    shutil.copyfile(os.path.join(HERE, "lambda_init.py"), init)
    os.chmod(init, 0o755)
    assert installer.is_installed(), f"LocalStack does not find the runtime init at {init}"
    print(f"kinesis-local installed; Lambda runtime init at {init}")


if __name__ == "__main__":
    main()
