"""Reports: tables, verdicts and prose of each analysis as Markdown/LaTeX (written by :mod:`dcnbio.io`).

=========================  ===================================================================================
module                     what
=========================  ===================================================================================
``report``                 the ``Report`` builder (sections, tables, figures, bullets); the σ and physiology
                           reports
``sigma_report``           the σ-distribution study's tables, V1 comparison and report
``completion_report``      pattern completion's tables across runs and its report
``contrast_report``        the contrast study's tables across runs and its report
``reconstruction_report``  reconstruction's tables across runs and its report
``small_data_report``      evaluation of the small-data runs, their results and the report
``solver_audit_report``    the solver audit's report
``meta_report``            σ(t), α(t) tables and the report of the meta-parametrized models
``bundle_report``          where each run of a training bundle stands (``analyses/bundle_summary.py``)
``claims``                 every claim of the paper judged from the analyses' results (``analyses/reproduce.py``)
=========================  ===================================================================================
"""
