#version 450
// host_session_test: the smallest compute shader, for pipelines made through a session.
layout(local_size_x = 1) in;
void main() {}
