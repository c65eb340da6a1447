// Replaced as the base library gains its first source file.
namespace bypass::base {}
