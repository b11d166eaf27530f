"""The local service manager: SeaweedFS (`objectstore`), the MLflow server (`tracking`) and a Ray head
(`ray_head`) on 127.0.0.1, each a `service.Service` with stable ports, and `stack`, which runs the three
together. No stage imports it: the stages run against any object store, MLflow server and cluster."""
