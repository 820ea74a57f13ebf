"""A minimal Cloud Tasks at the network edge: `CreateTask` of google.cloud.tasks.v2.CloudTasks over gRPC.

For what gcloud-tasks-emulator cannot do: it never answers ALREADY_EXISTS (it keeps no names) and it
always answers. This one keeps task names as the real service does (a second CreateTask with the same
name is ALREADY_EXISTS), and can lose its answer after creating the task (the client sees UNAVAILABLE
although the task exists) or hold the call until the client's deadline passes. The real
google-cloud-tasks client talks to it through `CloudTasksGrpcTransport(channel=grpc.insecure_channel(...))`,
exactly as the production dispatcher does with TASKS_API_ENDPOINT.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from google.cloud.tasks_v2 import CreateTaskRequest, Task

SERVICE = "google.cloud.tasks.v2.CloudTasks"


@dataclass
class Call:
    parent: str
    task: Task
    code: grpc.StatusCode


@dataclass
class _State:
    names: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    lose_answers: int = 0  # create the task, then answer UNAVAILABLE, this many times
    hang: bool = False  # never answer in time


class FakeCloudTasks:
    """`with FakeCloudTasks() as fake: … TASKS_API_ENDPOINT=fake.target …; fake.calls`."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-cloud-tasks"))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "CreateTask": grpc.unary_unary_rpc_method_handler(
                self._create_task, request_deserializer=CreateTaskRequest.deserialize,
                response_serializer=Task.serialize),
        }),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def lose_next_answers(self, count: int = 1) -> None:
        with self._lock:
            self._state.lose_answers += count

    def hang(self) -> None:
        with self._lock:
            self._state.hang = True

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._state.calls)

    def _create_task(self, request: CreateTaskRequest, context: grpc.ServicerContext) -> Task:
        task = request.task
        with self._lock:
            state = self._state
            if state.hang:
                state.calls.append(Call(request.parent, task, grpc.StatusCode.DEADLINE_EXCEEDED))
            elif task.name and task.name in state.names:
                state.calls.append(Call(request.parent, task, grpc.StatusCode.ALREADY_EXISTS))
            else:
                if task.name:
                    state.names.add(task.name)
                code = grpc.StatusCode.OK
                if state.lose_answers:
                    state.lose_answers -= 1
                    code = grpc.StatusCode.UNAVAILABLE
                state.calls.append(Call(request.parent, task, code))
            code = state.calls[-1].code
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self._release.wait(30)  # the client gives up first; stop() releases us
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        if code == grpc.StatusCode.ALREADY_EXISTS:
            context.abort(code, "Requested entity already exists")
        if code == grpc.StatusCode.UNAVAILABLE:
            context.abort(code, "The service is currently unavailable.")
        return task

    def __enter__(self) -> FakeCloudTasks:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._server.stop(grace=None)
