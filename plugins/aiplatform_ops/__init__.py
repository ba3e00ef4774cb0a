"""aiplatform_ops: the AI platform's operations manual as plain, testable functions.

DAG files under ``dags/`` wire these functions into tasks; nothing here touches a network,
a database or an Airflow connection at import time.
"""
