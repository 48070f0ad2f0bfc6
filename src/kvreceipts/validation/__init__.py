"""The local validation harness behind ``kvreceipts validate`` and ``./ci-local.sh``.

:mod:`~kvreceipts.validation.steps` lists the steps (upstream's nine, then ours) and the nox
sessions that run them; :mod:`~kvreceipts.validation.runner` builds and runs the nox command;
:mod:`~kvreceipts.validation.report` reads nox's ``--report`` file into a verdict, where a
skipped, aborted or missing session is a failure. :mod:`~kvreceipts.validation.smoke` is the
import check each feature session runs.
"""
