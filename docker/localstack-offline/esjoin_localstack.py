"""LocalStack's entry point in esjoin's offline image (docs/backends.md, "Offline image").

Stock LocalStack (localstack.runtime.main), with the two things it would download replaced before
it starts, and one thing it would pull made optional:
- DynamoDB's engine is dynamodb_engine.py (moto's DynamoDB) instead of DynamoDB Local (a jar + JDK).
  LocalStack's namespacing by account and region does not reach it: every account and region
  shares one set of tables, as with DynamoDB Local's -sharedDb. ARNs still carry the caller's.
- The Lambda runtime init is lambda_init.py, installed at build time where LocalStack's installer
  puts its Go binary, so LocalStack finds it installed (nothing to patch here).
- A Lambda runtime image that is already in the Docker engine is used as it is. LocalStack pulls
  the image when a function is created, and the offline runtime image is built locally (it is in
  no registry): LocalStack's own pull runs only when the image is missing.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "dynamodb_engine.py")
ENGINE_ENV = {"MOTO_ACCOUNT_ID": "000000000000"}
"""DynamoDB Local's account in ARNs, which LocalStack rewrites to the caller's account."""


def use_moto_dynamodb() -> None:
    from localstack.services.dynamodb import packages, server

    server.DynamodbServer._create_shell_command = lambda self: [sys.executable, ENGINE, "--port", str(self.port)]
    installer = packages.DynamoDBLocalPackageInstaller
    installer.install = lambda self, target=None: None  # nothing to download
    installer.get_java_env_vars = lambda self: dict(ENGINE_ENV)  # the engine's environment


def use_local_runtime_images() -> None:
    from localstack.services.lambda_.invocation import docker_runtime_executor as executor
    from localstack.utils.container_utils.container_client import NoSuchImage

    pull = executor._ensure_runtime_image_present

    def present_or_pull(image, platform):
        try:
            executor.CONTAINER_CLIENT.inspect_image(image, pull=False)
        except NoSuchImage:
            pull(image, platform)

    executor._ensure_runtime_image_present = present_or_pull


if __name__ == "__main__":
    use_moto_dynamodb()
    use_local_runtime_images()

    from localstack.runtime.main import main

    main()
