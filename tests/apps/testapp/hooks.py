before_job = ["testapp.tasks.before_job"]
after_job = ["testapp.tasks.after_job"]
has_realtime_permission = "testapp.tasks.has_realtime_permission"
