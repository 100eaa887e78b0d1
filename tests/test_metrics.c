#include "testutil.h"
static void test_placeholder(void) { CU_ASSERT_TRUE(1); }
static CU_TestInfo tests[] = {{"placeholder", test_placeholder}, CU_TEST_INFO_NULL};
int main(void) { return tm_test_main("metrics", tests); }
