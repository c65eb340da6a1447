// For network_test.py's `management` case: asks a gRPC server, through server reflection
// (grpc.reflection.v1alpha, what grpc_cli and grpcurl use), which services it offers, and prints
// their names, one a line. Exits 0 when the server answered with a list, 1 otherwise.
//
//   network_reflection_client TARGET      (unix:PATH or HOST:PORT, plaintext)
//
// The two protobuf messages are a few bytes each, so they are written and read by hand here
// instead of bringing protobuf's generated code into the tests.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace {

bool read_varint(const uint8_t*& p, const uint8_t* end, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    const uint8_t b = *p++;
    v |= uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Calls f(field number, bytes) for each length-delimited field of a protobuf message and skips
// the others; false if the message is malformed.
template <class F>
bool for_each_bytes_field(std::string_view message, F&& f) {
  const auto* p = reinterpret_cast<const uint8_t*>(message.data());
  const auto* end = p + message.size();
  while (p < end) {
    uint64_t key = 0, n = 0;
    if (!read_varint(p, end, key)) return false;
    switch (key & 7) {
      case 0:
        if (!read_varint(p, end, n)) return false;
        break;
      case 1:
        if (end - p < 8) return false;
        p += 8;
        break;
      case 2:
        if (!read_varint(p, end, n) || n > static_cast<uint64_t>(end - p)) return false;
        if (!f(key >> 3, std::string_view(reinterpret_cast<const char*>(p), n))) return false;
        p += n;
        break;
      case 5:
        if (end - p < 4) return false;
        p += 4;
        break;
      default:
        return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s unix:PATH|HOST:PORT\n", argv[0]);
    return 2;
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  // One operation at a time: start it, then wait for its tag.
  auto done = [&cq](intptr_t tag) {
    void* got = nullptr;
    bool ok = false;
    return cq.Next(&got, &ok) && got == reinterpret_cast<void*>(tag) && ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = done(1);
  // ServerReflectionRequest { list_services (7): "" }
  const uint8_t request[] = {0x3a, 0x00};
  grpc::Slice slice(request, sizeof request);
  grpc::ByteBuffer out(&slice, 1);
  if (ok) call->Write(out, reinterpret_cast<void*>(2));
  ok = ok && done(2);
  if (ok) call->WritesDone(reinterpret_cast<void*>(3));
  ok = ok && done(3);
  grpc::ByteBuffer in;
  if (ok) call->Read(&in, reinterpret_cast<void*>(4));
  ok = ok && done(4);
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (ok && in.Dump(&slices).ok())
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  void* got = nullptr;
  bool finished = false;
  (void)cq.Next(&got, &finished);
  if (!ok || !status.ok()) {
    std::fprintf(stderr, "no reflection answer from %s: gRPC status %d %s\n", argv[1],
                 static_cast<int>(status.error_code()), status.error_message().c_str());
    return 1;
  }
  // ServerReflectionResponse { list_services_response (6): ListServiceResponse {
  //   service (1): ServiceResponse { name (1) } ... } }
  std::vector<std::string> names;
  const bool parsed = for_each_bytes_field(bytes, [&](uint64_t field, std::string_view list) {
    return field != 6 || for_each_bytes_field(list, [&](uint64_t f, std::string_view service) {
             return f != 1 || for_each_bytes_field(service, [&](uint64_t g, std::string_view name) {
                      if (g == 1) names.emplace_back(name);
                      return true;
                    });
           });
  });
  if (!parsed || names.empty()) {
    std::fprintf(stderr, "%s answered without a list of services (%zu bytes)\n", argv[1], bytes.size());
    return 1;
  }
  for (const std::string& n : names) std::printf("%s\n", n.c_str());
  cq.Shutdown();
  while (cq.Next(&got, &finished)) {
  }
  return 0;
}
