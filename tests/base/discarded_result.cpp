// Must NOT compile with -Werror: a Result dropped on the floor. ctest runs the compiler on this
// file and expects it to fail (base_discarded_result_is_an_error), proving [[nodiscard]] bites.
#include "bypass/base/result.h"

bypass::base::Result<void> might_fail();

void caller() { might_fail(); }
