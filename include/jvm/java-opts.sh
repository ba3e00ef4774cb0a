# Manual §4.2.2: JVM options of the application services.
JAVA_OPTS="\
    -Xms4g \
    -Xmx8g \
    -XX:+UseG1GC \
    -XX:MaxGCPauseMillis=200 \
    -XX:+UseStringDeduplication \
    -XX:+HeapDumpOnOutOfMemoryError \
    -XX:HeapDumpPath=/app/logs/heapdump.hprof \
    -Xlog:gc*:/app/logs/gc.log:time,uptime:filecount=5,filesize=100m"
